"""Per-dataset normalisation statistics: the mean and std of RGB in [0, 1] that every transform divides by."""

from __future__ import annotations

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

# dataset name -> (mean, std) of RGB in [0, 1].
NORMALIZATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    # docs/method.md#strong-view step 6 (the authors' ImageNet transforms).
    "imagenet": IMAGENET,
    # ImageNet-100 is a 100-class subset of ImageNet's images (docs/method.md#small-datasets), so ImageNet's statistics
    # (docs/method.md#strong-view).
    "imagenet100": IMAGENET,
    # docs/method.md#small-datasets, the ReSSL small-data recipe's per-dataset statistics.
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "stl10": ((0.4408, 0.4279, 0.3867), (0.2682, 0.2610, 0.2686)),
    "tinyimagenet": ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)),
    # The built-in synthetic set: fixed round values (not measured), mapping [0, 1] to [-2, 2]; normalisation only
    # needs to put inputs on a sane scale, and fixed values do not change when the generator does.
    "synthetic": ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
    # scikit-learn's digits at 32 px (cgh.data.digits): mean and std of the 1300 training images' pixels, measured.
    "digits": ((0.3055, 0.3055, 0.3055), (0.3241, 0.3241, 0.3241)),
    # Arbitrary user images (a folder or an .npz array): ImageNet statistics, the usual default for natural images.
    "folder": IMAGENET,
    "npz": IMAGENET,
}


def dataset_normalization(data) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) for a config's data section: its ``mean`` / ``std`` when set, else the dataset's own statistics
    above (ImageNet's for a dataset without an entry)."""
    default_mean, default_std = NORMALIZATION.get(data.name, NORMALIZATION["imagenet"])
    return tuple(data.mean or default_mean), tuple(data.std or default_std)
