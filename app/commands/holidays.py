"""placeholder: being written"""

HELP = "(being written)"


def add_arguments(parser):
    pass


def run(args):
    raise NotImplementedError
