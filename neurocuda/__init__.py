"""neurocuda: train CNNs, convert them to spiking networks, export verified NIR graphs, deploy."""

__version__ = "0.1.0"
