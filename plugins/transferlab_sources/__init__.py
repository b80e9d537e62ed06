"""Built-in sources: synthetic (the embedded default), ImageFolder, ImageNet, Tiny-ImageNet, CIFAR-100, MNIST and Fashion-MNIST."""

from transferlab import hookimpl

from .cifar import CIFAR100
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
