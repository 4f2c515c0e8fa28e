"""Write the bundled demo images out of scikit-image's and matplotlib's packaged samples.

Run once by a maintainer (``pip install scikit-image matplotlib``); the output is committed under
``src/focal/demo/``. Sources and licences are listed in ``src/focal/demo/LICENSES.md``.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import numpy as np
import pyvips
import skimage.data

OUT = Path(__file__).resolve().parents[1] / "src" / "focal" / "demo"


def save(array: np.ndarray, name: str, **kwargs: object) -> None:
    image = pyvips.Image.new_from_array(np.ascontiguousarray(array)).copy(interpretation="srgb")
    image.write_to_file(str(OUT / name), **kwargs)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    save(skimage.data.astronaut(), "astronaut.jpg", Q=90, strip=True)
    save(skimage.data.coffee(), "coffee.jpg", Q=90, strip=True)
    save(skimage.data.chelsea(), "chelsea.jpg", Q=90, strip=True)
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    pyvips.Image.new_from_file(str(hopper)).write_to_file(
        str(OUT / "grace_hopper.jpg"), Q=90, strip=True
    )
    logo = Path(matplotlib.get_data_path()) / "sample_data" / "logo2.png"
    pyvips.Image.new_from_file(str(logo)).write_to_file(str(OUT / "logo.png"))
    print("wrote", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
