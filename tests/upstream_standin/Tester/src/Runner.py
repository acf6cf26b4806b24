"""Stand-in: runs the real TensorFlow op (or PyTorch function, with
``--framework=torch``) once per generated input (in this process) and counts
runs and invalid runs; ``terminate`` appends the API's row to
``<output_path>/res.csv`` in the Tester's column layout."""
import importlib
import os
import time

_FLOATS = {"tf.float32", "tf.float64", "tf.half", "tf.bfloat16"}


def _build(value, tf):
    if type(value).__name__ == "TensorValue":
        dtype = getattr(tf, value.dtype[3:])
        if value.dtype in _FLOATS:
            return tf.random.uniform(value.shape, minval=-4, maxval=4, dtype=dtype)
        return tf.zeros(value.shape, dtype=dtype)
    return value.value


def _build_torch(value, torch):
    if type(value).__name__ == "TensorValue":
        dtype = getattr(torch, value.dtype[3:])  # upstream spells dtypes the TF way in both modes
        if value.dtype in _FLOATS:
            return torch.rand(value.shape, dtype=dtype) * 8 - 4
        return torch.zeros(value.shape, dtype=dtype)
    return value.value


class Runner:
    def __init__(self, api_name, test_option, mode="cpu_ori"):
        self.api_name = api_name
        self.test_option = test_option
        self.mode = mode
        self.start_time = time.time()
        self.index = 0
        self.total_times = 0
        self.invalid = 0
        self.crash = 0
        self.timeout = 0
        self.OOM = 0
        self.terminated = False
        self.runner_p = None  # the real Tester runs calls in this worker process
        self.output_dir = os.path.join(test_option.output_path, api_name)
        for sub in ("", "crash", "timeout", "samples", "invalid", "non_crash"):
            os.makedirs(os.path.join(self.output_dir, sub), exist_ok=True)

    def _call_target(self):
        if self.test_option.fw == "torch":
            import torch
            mod, _, fn = self.api_name.rpartition(".")
            return getattr(importlib.import_module(mod), fn), torch
        import tensorflow as tf
        return getattr(tf.raw_ops, self.api_name.split(".")[-1]), tf

    def execute(self, manager):
        op, fw = self._call_target()
        build = _build_torch if self.test_option.fw == "torch" else _build
        kwargs = {a.name: build(a.arg_value, fw) for a in manager.arg_list if not a.arg_prop.is_mid}
        try:
            op(**kwargs)
        except Exception as e:  # the op rejected its input
            return str(e) or type(e).__name__
        return None

    def run(self, manager, times):
        self.index += 1
        for _ in range(times):
            if self.total_times >= self.test_option.test_round:
                break
            self.total_times += 1
            manager.generate_random_args()
            err = self.execute(manager)
            if err is not None:
                self.invalid += 1
                with open(os.path.join(self.output_dir, "invalid.log"), "a") as f:
                    f.write(self.mode + "\n" + err.splitlines()[0] + "\n")

    def terminate(self, msg=None):
        if self.terminated:
            return
        self.terminated = True
        path = os.path.join(self.test_option.output_path, "res.csv")
        with open(path, "a") as f:
            if f.tell() == 0:
                f.write("api, mode, time, samples, times, invalid, crash, timeout, OOM, pass_rate, coverage\n")
            if msg is not None:
                f.write("{},{},{}\n".format(self.api_name, self.mode, msg))
            else:
                rate = 1.0 - self.invalid / self.total_times if self.total_times else 0.0
                f.write("{},{},{:.2f},{},{},{},{},{},{},{:.2%},0\n".format(
                    self.api_name, self.mode, time.time() - self.start_time, self.index, self.total_times,
                    self.invalid, self.crash, self.timeout, self.OOM, rate))
