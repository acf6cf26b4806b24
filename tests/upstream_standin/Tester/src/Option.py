"""Stand-in: test options and the output folder layout."""
import os


class TestOption:
    def __init__(self):
        self.fw = "tf"
        self.mode = "all"
        self.filter = None
        self.test_round = 2000
        self.total_round = 1
        self.target_api = None
        self.work_path = None

    def initialize(self, round=0):
        # PyTorch data as the ncsu-swat fork keeps it (the original Tester: data/pytorch)
        sub = {"tf": "tensorflow", "torch": "torch"}[self.fw]
        self.api2op_csv = os.path.join("..", "data", sub, "API2OP.csv")
        self.api_dir = os.path.join("..", "data", sub, "op_json")
        self.output_path = "output_{}_{}".format(self.fw, round)
        if self.work_path:
            if not os.path.exists(self.work_path):
                os.mkdir(self.work_path)
            self.output_path = os.path.join(self.work_path, self.output_path)
        if not os.path.exists(self.output_path):
            os.mkdir(self.output_path)
