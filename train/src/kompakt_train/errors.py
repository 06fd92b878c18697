"""The one error type of the package: its message names what is wrong; the CLI prints it and
exits with status 2, without a traceback."""


class TrainError(Exception):
    pass
