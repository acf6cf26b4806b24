"""Stand-in: argument kinds, named as in ACETest's Tester."""
from enum import IntEnum

_NAMES = {"int": 1, "string": 2, "bool": 3, "float": 4, "tensor": 5, "list": 6, "dict": 7, "type": 8}


class ArgType(IntEnum):
    INT = 1
    STRING = 2
    BOOL = 3
    FLOAT = 4
    TENSOR = 5
    LIST = 6
    DICT = 7
    TYPE = 8

    @staticmethod
    def from_string(name):
        return ArgType(_NAMES[name.lower()])
