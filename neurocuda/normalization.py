"""CIFAR-10's per-channel pixel mean and standard deviation (the data's default normalization),
in a module of its own so that the SNN runtime reads them without importing the data stack."""

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
