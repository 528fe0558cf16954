"""The embedded default: baby-language data, tokenizer, teacher, reward models and a from-scratch student.

A recipe on top of the library (it uses data, models, evaluation and the reward trainer; none of them
uses it). `spec` says what a bundle is (sizes, version, folder layout), `recipe` how it is built,
`build` builds it once under the cache root and reuses it. Config sources naming the bundle
('bundle', 'bundle:grammar', ...) are resolved to its paths in `tnd_core.sources`, nowhere else.
"""

from tnd_core.bundle.build import build_bundle, ensure_bundle
from tnd_core.bundle.progress import ProgressFn
from tnd_core.bundle.spec import (
    BUNDLE_VERSION,
    MANIFEST,
    RECOMMENDED_PPO,
    SIZES,
    BundleError,
    BundlePaths,
    BundleSpec,
    ModelSpec,
    bundle_root,
    resolve_size,
)

__all__ = [
    "BUNDLE_VERSION",
    "MANIFEST",
    "RECOMMENDED_PPO",
    "SIZES",
    "BundleError",
    "BundlePaths",
    "BundleSpec",
    "ModelSpec",
    "ProgressFn",
    "build_bundle",
    "bundle_root",
    "ensure_bundle",
    "resolve_size",
]
