"""Folder datasets as they ship: scene folders, palette-mode PNG masks, pairing errors, photo-as-mask."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segweak.data.palette import IGNORE_INDEX, Palette, expand_colormap, vaihingen_palette
from segweak.data.raster import read_label
from segweak.data.sources import FolderSource, band_names, mask_from_template
from segweak.data.store import Store, prepare
from segweak.data.synthetic import SCENE_CLASSES, synthesize_scenes
from segweak.errors import SegweakError

TEMPLATE = "{parent}/masks/{stem}.png"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Two scenes of two 64×80 images each, P-mode PNG masks, palette.yaml."""
    return synthesize_scenes(
        tmp_path_factory.mktemp("scenes") / "data", n_scenes=2, per_scene=2, height=64, width=80
    )


def test_scene_layout_prepares_without_conversion(scenes, tmp_path):
    src = FolderSource(f"{scenes}/*/images/*.jpg", TEMPLATE, scenes / "palette.yaml", group_by="top")
    tiles = src.tiles()
    assert [t.id for t in tiles] == [
        "Scene 1__images__image_part_001",
        "Scene 1__images__image_part_002",
        "Scene 2__images__image_part_001",
        "Scene 2__images__image_part_002",
    ]
    assert [t.group for t in tiles] == ["Scene 1", "Scene 1", "Scene 2", "Scene 2"]
    assert tiles[0].label_path == str(scenes / "Scene 1" / "masks" / "image_part_001.png")
    store = prepare(src, tmp_path / "store", patch=32, progress=False)
    st = Store(store)
    assert len(st) == 4 * 2 * 3 and st.classes == list(SCENE_CLASSES)
    assert st.meta["source"]["describe"]["pairing"] == "template"
    assert [b["name"] for b in st.meta["bands"]] == ["R", "G", "B"]
    # The stored mask is the PNG's index plane: its palette lists the classes in order.
    raw = np.asarray(Image.open(scenes / "Scene 1" / "masks" / "image_part_001.png"))
    assert np.array_equal(st.masks[0], raw[:32, :32])
    assert set(st.groups) == {"Scene 1", "Scene 2"}


def test_palette_mode_mask_read_by_colour_or_by_index(scenes):
    path = str(scenes / "Scene 1" / "masks" / "image_part_001.png")
    assert Image.open(path).mode == "P"
    colours = read_label(path, "rgb")
    indices = read_label(path, "index")
    assert colours.shape == (64, 80, 3) and indices.shape == (64, 80, 1)
    pal = Palette.from_yaml(scenes / "palette.yaml")
    by_colour, _ = pal.encode(colours)
    assert np.array_equal(by_colour, indices[..., 0])
    index_pal = Palette.from_dict(
        {"mode": "index", "classes": [{"name": n, "value": i} for i, n in enumerate(SCENE_CLASSES)]}
    )
    src = FolderSource(f"{scenes}/*/images/*.jpg", TEMPLATE, index_pal)
    assert np.array_equal(src.tiles()[0].read()[1], by_colour)


def test_palette_mode_index_without_colour_is_an_error():
    with pytest.raises(SegweakError, match=r"value\(s\) \[7\] have no colour in the file's own colour table"):
        expand_colormap(np.array([[0, 7]], np.uint8), {0: (255, 255, 255, 255)}, source="m.png")
    rgb = expand_colormap(np.array([[1, 0]], np.uint8), {0: (1, 2, 3, 255), 1: (4, 5, 6, 255)})
    assert rgb.tolist() == [[[4, 5, 6], [1, 2, 3]]]


def test_grey_single_band_mask_with_rgb_palette_says_use_index(tmp_path):
    (tmp_path / "i").mkdir()
    (tmp_path / "m").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "i" / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "m" / "a.png")
    with pytest.raises(SegweakError, match="no colour table.*mode: index"):
        FolderSource(tmp_path / "i", tmp_path / "m", vaihingen_palette()).tiles()


def test_mask_template_placeholders(tmp_path):
    from pathlib import Path

    img = Path("data/Scene 3/images/x.jpg")
    root = Path("data")
    assert mask_from_template("{parent}/masks/{stem}.png", img, root) == Path("data/Scene 3/masks/x.png")
    assert mask_from_template("{dir}/{stem}_{ext}.png", img, root) == Path("data/Scene 3/images/x_jpg.png")
    assert mask_from_template("labels/{reldir}/{stem}.tif", img, root) == Path("labels/Scene 3/images/x.tif")
    assert mask_from_template("{root}/gt/{stem}.png", img, root) == Path("data/gt/x.png")
    with pytest.raises(SegweakError, match=r"unknown placeholder\(s\) name.*\{parent\}"):
        FolderSource("data/*.jpg", "{name}.png", vaihingen_palette())


def test_same_root_for_images_and_masks_is_refused(scenes):
    for masks in (str(scenes), str(scenes / "Scene 1")):
        with pytest.raises(SegweakError, match=r"select the same \d+ file\(s\).*cannot be its own mask"):
            FolderSource(scenes, masks, scenes / "palette.yaml").tiles()
    # A glob that also matches the masks, with a template pointing at them: refused too.
    with pytest.raises(SegweakError, match="cannot be its own mask"):
        FolderSource(f"{scenes}/*/*/*", "{parent}/masks/{stem}.png", scenes / "palette.yaml").tiles()


def test_template_pairing_failure_reports_counts_names_and_option(scenes, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(scenes, data)
    (data / "Scene 2" / "masks" / "image_part_002.png").unlink()
    (data / "Scene 1" / "masks" / "image_part_001.png").unlink()
    with pytest.raises(SegweakError) as exc:
        FolderSource(f"{data}/*/images/*.jpg", TEMPLATE, data / "palette.yaml").tiles()
    msg = str(exc.value)
    assert "\n" not in msg
    assert "2 of 4 image(s) found by --images" in msg and "(2 mask file(s) found by --masks" in msg
    assert "unpaired Scene 1/images/image_part_001.jpg, Scene 2/images/image_part_002.jpg" in msg
    assert "the --masks template" in msg and "masks/image_part_001.png" in msg


def test_folder_pairing_failure_names_first_few_and_the_template_option(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(5):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "imgs" / f"t{i}.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "masks" / "t0.png")
    with pytest.raises(SegweakError) as exc:
        FolderSource(tmp_path / "imgs", tmp_path / "masks", vaihingen_palette()).tiles()
    msg = str(exc.value)
    assert "4 of 5 image(s)" in msg and "(1 mask file(s) found" in msg
    assert "unpaired t1.png, t2.png, t3.png (+1 more)" in msg
    assert "give --masks a template" in msg


def test_images_glob_that_matches_nothing(tmp_path):
    with pytest.raises(SegweakError, match="matches no"):
        FolderSource(f"{tmp_path}/*/images/*.jpg", TEMPLATE, vaihingen_palette()).tiles()


def test_photo_as_mask_never_gets_a_tolerance_hint(tmp_path):
    """A photo read as its own mask: the error says it is not a mask and suggests no tolerance."""
    from segweak.data.synthetic import render_tile

    photo, _ = render_tile(np.random.default_rng(0), 96, 96)
    # Even 127, which would snap nearly every pixel of a photo to some colour, does not read it.
    for tolerance in (10, 60, 127):
        with pytest.raises(SegweakError) as exc:
            vaihingen_palette(tolerance=tolerance).encode(photo, source="photo.png")
        msg = str(exc.value)
        assert "does not look like a label mask" in msg
        assert "--tolerance" not in msg and "127" not in msg


def test_blended_mask_gets_the_tolerance_it_needs():
    lab = np.full((10, 10, 3), 255, np.uint8)
    lab[0, :3] = (128, 128, 255)  # white/blue blend: 127 from blue
    lab[1, 0] = (200, 200, 255)  # 55 from white
    with pytest.raises(SegweakError, match=r"--tolerance 127 snaps every one") as exc:
        vaihingen_palette().encode(lab, source="x.tif")
    assert "4 pixel(s)" in str(exc.value)
    mask, stats = vaihingen_palette(tolerance=127).encode(lab)
    assert stats.n_snapped == 4 and mask[1, 0] == 0


def test_mask_with_a_colour_missing_from_the_palette_says_add_it():
    lab = np.full((10, 10, 3), 255, np.uint8)
    lab[:2] = (255, 0, 255)  # magenta: 255 from every Vaihingen colour, 20 % of the pixels
    with pytest.raises(SegweakError, match="too far to be blends.*add them to the palette") as exc:
        vaihingen_palette().encode(lab)
    assert "--tolerance" not in str(exc.value)


def test_band_names():
    assert band_names("IRRG") == ["IR", "R", "G"]
    assert band_names("rgbir") == ["R", "G", "B", "IR"]
    assert band_names("NIRRG") == ["NIR", "R", "G"]
    assert band_names("R, G, B, NIR") == ["R", "G", "B", "NIR"]
    with pytest.raises(SegweakError, match="band order 'RGB-D'"):
        band_names("RGB-D")


def test_folder_four_band_images(tmp_path):
    import rasterio

    (tmp_path / "i").mkdir()
    (tmp_path / "m").mkdir()
    img = np.random.default_rng(1).integers(0, 256, (4, 40, 48), dtype=np.uint8)
    with rasterio.open(
        tmp_path / "i" / "a.tif", "w", driver="GTiff", width=48, height=40, count=4, dtype="uint8"
    ) as d:
        d.write(img)
    Image.fromarray(np.full((40, 48, 3), 255, np.uint8)).save(tmp_path / "m" / "a.png")
    src = FolderSource(tmp_path / "i", tmp_path / "m", vaihingen_palette(), band_order="R,G,B,NIR")
    image, mask = src.tiles()[0].read()
    assert image.shape == (40, 48, 4) and np.array_equal(image, np.moveaxis(img, 0, -1))
    assert (mask == 0).all() and IGNORE_INDEX not in mask
    # Three band names: a non-constant 4th band is refused, and the message says how to keep it.
    with pytest.raises(SegweakError, match="name the 4 bands"):
        FolderSource(tmp_path / "i", tmp_path / "m", vaihingen_palette()).tiles()[0].read()
    assert json.dumps(src.describe()["bands"])


def test_folders_whose_names_look_like_patterns_are_folders(tmp_path):
    images, masks = tmp_path / "[2020] images", tmp_path / "{masks}"
    images.mkdir()
    masks.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "a.png")
    Image.fromarray(np.full((8, 8, 3), 255, np.uint8)).save(masks / "a.png")
    src = FolderSource(images, masks, vaihingen_palette())
    assert not src.pattern and not src.template
    assert (src.tiles()[0].read()[1] == 0).all()
