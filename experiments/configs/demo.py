"""The CPU demo: the shipped Industrial_and_Scientific data end to end, in minutes."""
from sidjax.configs import base_config


def get_config():
    config = base_config()
    config.name = "demo"
    config.stages = ("data",)
    return config
