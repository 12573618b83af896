"""Deploy errors (no torch import here: the runtime must stay torch-free)."""


class DeployError(Exception):
    """A model cannot be exported exactly, or a ``.onebit`` file is missing, corrupt or invalid."""
