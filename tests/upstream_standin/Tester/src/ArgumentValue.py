"""Stand-in: generated values, with the class names and attributes the hook
reads (``value``; tensors: ``dtype`` as ``tf.<name>``, ``shape``, ``min_val``,
``max_val``; lists hold value objects)."""


class ArgumentValue:
    def __init__(self, name, value=None):
        self.name = name
        self.value = value
        self.generated = True


class IntValue(ArgumentValue):
    pass


class FloatValue(ArgumentValue):
    pass


class BoolValue(ArgumentValue):
    pass


class StringValue(ArgumentValue):
    pass


class TypeValue(ArgumentValue):
    pass


class ListValue(ArgumentValue):
    pass


class TensorValue(ArgumentValue):
    def __init__(self, name, dtype, shape, value=None, min_val=-1024, max_val=1024):
        super().__init__(name, value)
        self.dtype = dtype
        self.shape = list(shape)
        self.min_val = min_val
        self.max_val = max_val
