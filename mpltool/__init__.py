"""mpltool: Meta Pseudo Labels from CIFAR binaries to an Ascend offline model, every step checked."""

__version__ = "0.1.0"
