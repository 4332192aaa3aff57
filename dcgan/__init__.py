"""DCGAN on MNIST with PyTorch Lightning and Hydra."""
