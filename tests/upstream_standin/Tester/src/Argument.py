"""Stand-in: one op argument with its properties and generated value. The
generator is deliberately simple: a random choice per property, and a bias-like
tensor that copies the channel size of another tensor with some probability."""
import random

from ArgType import ArgType
from ArgumentValue import IntValue, StringValue, TensorValue, TypeValue

_PROP_KEYS = ("is_mid", "enum", "dtype", "min_ndim", "max_ndim", "max_dim", "min", "max",
              "channel_of", "channel_prob", "ndim", "shape", "value", "optional", "child_prop")
_TYPE_NAMES = {"float": "tf.float32", "double": "tf.float64", "half": "tf.half", "int32": "tf.int32",
               "qint8": "tf.qint8"}


class Prop:
    def __init__(self, d):
        for k in _PROP_KEYS:
            setattr(self, k, d.get(k))


class Argument:
    def __init__(self, name, prop):
        self.name = name
        self.type = ArgType.from_string(prop["type"])
        self.arg_prop = Prop(prop)
        self.arg_value = None

    def clear_value(self):
        self.arg_value = None

    def generate_random_value(self, value_dict):
        p = self.arg_prop
        if self.type == ArgType.TYPE:
            self.arg_value = TypeValue(self.name, _TYPE_NAMES[random.choice(p.enum)])
        elif self.type == ArgType.STRING:
            self.arg_value = StringValue(self.name, random.choice(p.enum))
        elif self.type == ArgType.INT:
            self.arg_value = IntValue(self.name, random.randint(p.min, p.max))
        elif self.type == ArgType.TENSOR:
            ref = p.dtype[1:].split(".")[0]
            if ref not in value_dict:
                return  # its dtype argument is not generated yet
            shape = None
            if p.channel_of:
                other = value_dict.get(p.channel_of)
                fmt = value_dict.get("data_format")
                if other is None or fmt is None:
                    return
                if other.shape and random.random() < p.channel_prob:
                    axis = 1 if fmt.value == "NCHW" and len(other.shape) > 1 else -1
                    shape = [other.shape[axis]]
            if shape is None:
                ndim = random.randint(p.min_ndim, p.max_ndim)
                shape = [random.randint(0, p.max_dim) for _ in range(ndim)]
            self.arg_value = TensorValue(self.name, value_dict[ref].value, shape)
        else:
            raise NotImplementedError(self.type)
