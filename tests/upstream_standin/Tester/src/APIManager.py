"""Stand-in: draws one run's values into ``arg_list``."""


class APIManager:
    def __init__(self, api_name, args, test_option):
        self.api_name = api_name
        self.arg_list = args
        self.test_option = test_option

    def generate_random_args(self):
        for arg in self.arg_list:
            arg.clear_value()
        values = {}
        for _ in range(len(self.arg_list) + 1):
            for arg in self.arg_list:
                if arg.arg_value is None:
                    arg.generate_random_value(values)
                    if arg.arg_value is not None:
                        values[arg.name] = arg.arg_value
            if len(values) == len(self.arg_list):
                return
        raise RuntimeError("could not generate every argument")
