"""Built-in sources: synthetic (the embedded default), ImageFolder, MNIST and Fashion-MNIST."""

from transferlab import hookimpl

from .idx import MNIST, FashionMNIST
from .image_folder import ImageFolder
from .synthetic import Synthetic


@hookimpl
def register_sources(register):
    register(Synthetic)
    register(ImageFolder)
    register(MNIST)
    register(FashionMNIST)
