import numpy as np
import pytest

from segweak.data.palette import (
    DEFAULT_TOLERANCE,
    IGNORE_INDEX,
    ClassSet,
    Palette,
    SnapStats,
    colorize,
    vaihingen_palette,
)
from segweak.errors import SegweakError

WHITE, BLUE, CYAN, GREEN, YELLOW, RED, BLACK = (
    (255, 255, 255),
    (0, 0, 255),
    (0, 255, 255),
    (0, 255, 0),
    (255, 255, 0),
    (255, 0, 0),
    (0, 0, 0),
)


def _img(rows):
    return np.array(rows, dtype=np.uint8)


def test_vaihingen_exact_colours_and_clutter_ignored_by_default():
    lab = _img([[WHITE, BLUE, CYAN, GREEN], [YELLOW, RED, BLACK, WHITE]])
    mask, stats = vaihingen_palette().encode(lab)
    assert mask.dtype == np.uint8
    assert mask.tolist() == [[0, 1, 2, 3], [4, IGNORE_INDEX, IGNORE_INDEX, 0]]
    assert stats.n_exact == 8 and stats.n_snapped == 0 and stats.n_ignore == 2


def test_keep_clutter_makes_sixth_class():
    pal = vaihingen_palette(keep_clutter=True)
    assert pal.classes.names[-1] == "clutter" and len(pal.classes) == 6
    mask, _ = pal.encode(_img([[RED, BLACK]]))
    assert mask.tolist() == [[5, IGNORE_INDEX]]


def test_snapping_within_tolerance_counts_pixels():
    lab = _img([[(250, 251, 249), (3, 2, 250)], [(0, 0, 6), WHITE]])
    mask, stats = vaihingen_palette(tolerance=10).encode(lab)
    assert mask.tolist() == [[0, 1], [IGNORE_INDEX, 0]]  # (0,0,6) snaps to black = ignore
    assert stats.n_snapped == 3 and stats.n_exact == 1 and stats.max_distance == 6


def test_tolerance_is_chebyshev():
    # Each channel off by 8: Euclidean ~13.9 but Chebyshev 8 -> accepted at tolerance 8, rejected at 7.
    lab = _img([[(247, 247, 247)]])
    assert vaihingen_palette(tolerance=8).encode(lab)[0].tolist() == [[0]]
    with pytest.raises(SegweakError):
        vaihingen_palette(tolerance=7).encode(lab)


def test_blend_beyond_tolerance_is_an_error_with_details():
    lab = np.zeros((4, 5, 3), dtype=np.uint8)
    lab[:] = WHITE
    lab[2, 3] = (128, 128, 255)  # white/blue blend
    lab[3, 4] = (128, 128, 255)
    with pytest.raises(SegweakError) as exc:
        vaihingen_palette().encode(lab, source="labels/x.tif")
    msg = str(exc.value)
    assert "labels/x.tif" in msg and "2 pixel(s)" in msg
    assert "row 2, col 3" in msg and "[128, 128, 255]" in msg and "--tolerance" in msg


def test_large_tolerance_snaps_blend_to_nearest_class():
    # Blends along an edge of a mask that is otherwise exact colours (as resampled labels are).
    lab = _img([[(200, 200, 255), (60, 60, 255), WHITE, WHITE, BLUE]])
    mask, _ = vaihingen_palette(tolerance=127).encode(lab)
    assert mask.tolist() == [[0, 1, 0, 0, 1]]  # nearer to white, nearer to blue


def test_index_palette_from_yaml(tmp_path):
    y = tmp_path / "p.yaml"
    y.write_text(
        "mode: index\nclasses:\n  - {name: a, value: 1}\n  - {name: b, values: [2, 7]}\nignore: [0]\n"
    )
    pal = Palette.from_yaml(y)
    assert pal.mode == "index" and pal.classes.names == ("a", "b")
    mask, stats = pal.encode(np.array([[0, 1, 2, 7]], dtype=np.uint8))
    assert mask.tolist() == [[IGNORE_INDEX, 0, 1, 1]]
    assert stats.n_ignore == 1
    with pytest.raises(SegweakError, match=r"not in the palette.*row 0, col 1\) = 9"):
        pal.encode(np.array([[1, 9, 9]], dtype=np.uint16), source="m.png")
    # 3 identical bands (a grey PNG saved as RGB) are accepted
    m3 = np.repeat(np.array([[1, 2]], dtype=np.uint8)[..., None], 3, axis=2)
    assert pal.encode(m3)[0].tolist() == [[0, 1]]


def test_rgb_palette_yaml_roundtrip(tmp_path):
    y = tmp_path / "p.yaml"
    y.write_text(
        "mode: rgb\nclasses:\n  - {name: road, color: [255, 255, 255]}\n"
        "  - {name: house, colors: [[0, 0, 255], [0, 0, 200]]}\nignore: [[0, 0, 0]]\ntolerance: 5\n"
    )
    pal = Palette.from_yaml(y)
    assert pal.tolerance == 5
    assert Palette.from_dict(pal.to_dict()) == pal
    mask, _ = pal.encode(_img([[(0, 0, 202), (2, 0, 0), WHITE]]))
    assert mask.tolist() == [[1, IGNORE_INDEX, 0]]


@pytest.mark.parametrize(
    "text, match",
    [
        ("mode: hsv\nclasses: [{name: a, color: [1, 2, 3]}]\n", "mode"),
        ("mode: rgb\nclasses: [{name: a, color: [1, 2]}]\n", "three integers"),
        ("mode: rgb\nclasses: [{name: a, value: 1}]\n", "unknown key"),
        ("mode: rgb\nclasses: [{name: a, color: [1, 2, 3]}, {name: b, color: [1, 2, 3]}]\n", "used by both"),
        ("mode: index\nclasses: [{name: a, value: 1}]\nignore: [1]\n", "both class"),
        ("mode: rgb\nclasses: [{name: a, color: [1, 2, 3]}]\ntolerance: 300\n", "0..255"),
        ("mode: rgb\nclasses: []\n", "non-empty"),
        ("mode: rgb\nclasses: [{name: a, color: [1, 2, 3]}]\nextra: 1\n", "unknown palette key"),
    ],
)
def test_bad_palette_yaml(tmp_path, text, match):
    y = tmp_path / "bad.yaml"
    y.write_text(text)
    with pytest.raises(SegweakError, match=match):
        Palette.from_yaml(y)


def test_missing_palette_file(tmp_path):
    with pytest.raises(SegweakError, match="does not exist"):
        Palette.from_yaml(tmp_path / "nope.yaml")


def test_colorize_and_errors():
    pal = vaihingen_palette()
    mask = np.array([[0, 1, 255], [4, 3, 2]], dtype=np.uint8)
    rgb = colorize(mask, pal)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == WHITE and tuple(rgb[0, 1]) == BLUE and tuple(rgb[0, 2]) == BLACK
    # colorize is the inverse of encode on class pixels
    assert np.array_equal(pal.encode(rgb)[0][mask != 255], mask[mask != 255])
    with pytest.raises(SegweakError, match="neither a class"):
        colorize(np.array([[7]]), pal)


def test_classset_and_stats():
    cs = ClassSet(("a", "b"))
    assert len(cs) == 2 and cs.index("b") == 1
    with pytest.raises(SegweakError):
        ClassSet(("a", "a"))
    with pytest.raises(SegweakError):
        cs.index("c")
    total = SnapStats(n_pixels=4, n_snapped=1, max_distance=3).add(SnapStats(n_pixels=2, max_distance=5))
    assert total.to_dict()["n_pixels"] == 6 and total.max_distance == 5
    assert 0 < DEFAULT_TOLERANCE < 64


def test_encode_wrong_shape_errors():
    with pytest.raises(SegweakError, match="H×W×3"):
        vaihingen_palette().encode(np.zeros((3, 3), dtype=np.uint8), source="f.tif")
