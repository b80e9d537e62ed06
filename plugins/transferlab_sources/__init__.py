"""Built-in sources: synthetic (the embedded default), ImageFolder, ImageNet, Tiny-ImageNet, CIFAR-100, MNIST, Fashion-MNIST,
scikit-learn's digits, and subset (a source through a policy chain, spelled `SOURCE | POLICY ...`)."""

from transferlab import SubsetSource, hookimpl

from .cifar import CIFAR100
from .digits import Digits
from .idx import MNIST, FashionMNIST
from .image_folder import ImageFolder
from .imagenet import ImageNet
from .synthetic import Synthetic
from .tiny_imagenet import TinyImageNet


@hookimpl
def register_sources(register):
    register(Synthetic)
    register(ImageFolder)
    register(ImageNet)
    register(TinyImageNet)
    register(CIFAR100)
    register(MNIST)
    register(FashionMNIST)
    register(Digits)
    register(SubsetSource)
