"""Stand-in for the Tester's main.py: same long options and output layout;
tests one API with a fixed number of samples per round."""
import getopt
import json
import math
import os
import sys

from APIManager import APIManager
from Argument import Argument
from Option import TestOption
from Runner import Runner

SAMPLES = 5


def find_op(api, csv_path):
    with open(csv_path) as f:
        for line in f:
            parts = line.split(" ")
            if parts[0] == api:
                return parts[1]
    return None


def load_args(api, opt):
    # TensorFlow op descriptions are named after the API, PyTorch ones after its op
    name = find_op(api, opt.api2op_csv) if opt.fw == "torch" else api.split(".")[-1]
    with open(os.path.join(opt.api_dir, name + ".json")) as f:
        props = json.load(f)
    return [Argument(name, p) for name, p in props.items()]


def test_api(api, opt):
    runner = Runner(api, opt, mode="cpu_ori")
    times = int(math.ceil(opt.test_round / SAMPLES))
    for _ in range(SAMPLES):
        runner.run(APIManager(api, load_args(api, opt), opt), times)
    runner.terminate()


if __name__ == "__main__":
    names = ["framework=", "filter=", "mode=", "test_round=", "round_timeout=", "use_cons=", "api_timeout=",
             "target_api=", "save_non_crash=", "total_round=", "get_cov=", "work_path=", "save_bitmap=",
             "record_cov="]
    opts, _ = getopt.getopt(sys.argv[1:], "", names)
    opt = TestOption()
    for k, v in opts:
        if k == "--framework":
            opt.fw = v
        elif k == "--mode":
            opt.mode = v
        elif k == "--test_round":
            opt.test_round = int(v)
        elif k == "--total_round":
            opt.total_round = int(v)
        elif k == "--target_api":
            opt.target_api = v
        elif k == "--work_path":
            opt.work_path = v
    opt.initialize()
    if find_op(opt.target_api, opt.api2op_csv) is None:
        print("API not found:", opt.target_api)
        sys.exit(0)
    for r in range(opt.total_round):
        opt.initialize(round=r)
        if opt.target_api in os.listdir(opt.output_path):
            continue
        test_api(opt.target_api, opt)
    print("Test finished")
