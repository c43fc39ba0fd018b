""" Every fit of :mod:`timm_u1.early.fits` over a whole filter bank, as one record per filter.

:func:`fit_bank` takes a (N, C, H, W) conv weight, analyses each filter's luminance part
(:func:`timm_u1.early.fits.luminance`) and returns :class:`BankFits`: per filter the achromatic
fraction, the spectral orientation index, and where the kernel is large enough the LoG, DoG and
Gabor fits, the radial-symmetry index about the LoG centre and the class. A kernel too small for a
fit has that fit refused once for the whole bank, with the reason kept in ``BankFits.refused``.
:meth:`BankFits.from_dict` checks every field of a stored bank, so a damaged resume file is named.
"""
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from . import fits

__all__ = ['BankFits', 'fit_bank', 'RECORD_FIELDS']

# the fields of one filter's record and what each must hold when loaded (null: a flat filter's
# indices, or a fit refused for the kernel size)
RECORD_FIELDS = {
    'index': 'integer', 'achromatic_fraction': 'number', 'colour': 'numbers', 'osi': 'number or null',
    'theta': 'number or null', 'edge_theta': 'number or null', 'gabor': 'fit or null', 'log': 'fit or null',
    'dog': 'fit or null', 'rsi': 'number or null', 'rot90': 'number or null', 'class': 'class or null',
}
_FIT_FIELDS = {'gabor': fits.GaborFit, 'log': fits.LogFit, 'dog': fits.DogFit}


def _json_float(x: float) -> Optional[float]:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


@dataclass
class BankFits:
    """The fits of one filter bank: ``records`` (one dict per filter, :data:`RECORD_FIELDS`), the kernel
    shape (H, W), the fits refused for the bank's kernel size, and the starts used."""
    records: List[Dict[str, Any]]
    kernel: List[int]
    refused: Dict[str, str] = field(default_factory=dict)
    gabor_starts: int = fits.GABOR_STARTS

    def values(self, key: str, sub: Optional[str] = None, where: Optional[str] = None) -> np.ndarray:
        """A per-filter figure as an array (nan where missing): ``values('gabor', 'error')``,
        ``values('rsi', where='centre-surround')`` (only filters of that class)."""
        out = []
        for r in self.records:
            if where is not None and r['class'] != where:
                continue
            v = r[key] if sub is None else (r[key] or {}).get(sub)
            out.append(math.nan if v is None else float(v))
        return np.asarray(out, dtype=np.float64)

    def class_counts(self) -> Dict[str, int]:
        counts = {c: 0 for c in fits.CLASSES}
        for r in self.records:
            if r['class'] is not None:
                counts[r['class']] += 1
        return counts

    @classmethod
    def pool(cls, banks: List['BankFits']) -> 'BankFits':
        """One bank of every filter of ``banks`` (a control's seeds), all of one kernel shape."""
        if not banks or any(b.kernel != banks[0].kernel for b in banks):
            raise ValueError('pooling needs at least one bank, all of one kernel shape')
        return cls([r for b in banks for r in b.records], banks[0].kernel, dict(banks[0].refused), banks[0].gabor_starts)

    def to_dict(self) -> Dict[str, Any]:
        return {'kernel': list(self.kernel), 'refused': dict(self.refused), 'gabor_starts': self.gabor_starts,
                'records': self.records}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> 'BankFits':
        """A stored bank, every field checked; a bad one raises ValueError naming the field and ``where``."""
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f'{where}: {name} {why}; delete the file to fit that bank again.')

        if not isinstance(data, dict):
            raise bad('the bank', 'is not a JSON object')
        for key, kind in (('kernel', list), ('refused', dict), ('gabor_starts', int), ('records', list)):
            if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
                raise bad(key, f'is missing or not a {kind.__name__}')
        if len(data['kernel']) != 2 or not all(isinstance(v, int) and v > 0 for v in data['kernel']):
            raise bad('kernel', f'must be two positive integers, got {data["kernel"]}')
        for i, record in enumerate(data['records']):
            _check_record(record, f'records[{i}]', bad)
        return cls(data['records'], data['kernel'], data['refused'], data['gabor_starts'])


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _valid(kind: str, value: Any, fit_fields: Optional[set]) -> bool:
    if kind.endswith(' or null') and value is None:
        return True
    kind = kind.replace(' or null', '')
    if kind == 'integer':
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == 'number':
        return _is_number(value)
    if kind == 'numbers':
        return isinstance(value, list) and bool(value) and all(_is_number(v) for v in value)
    if kind == 'class':
        return value in fits.CLASSES
    return isinstance(value, dict) and set(value) == fit_fields and all(v is None or _is_number(v) for v in value.values())


def _check_record(record: Any, name: str, bad) -> None:
    if not isinstance(record, dict) or set(record) != set(RECORD_FIELDS):
        raise bad(name, f'must have exactly the fields {sorted(RECORD_FIELDS)}')
    for key, kind in RECORD_FIELDS.items():
        fit_fields = set(_FIT_FIELDS[key].__dataclass_fields__) if key in _FIT_FIELDS else None
        if not _valid(kind, record[key], fit_fields):
            expected = f'{kind} ({sorted(fit_fields)})' if fit_fields else kind
            raise bad(f'{name}.{key}', f'must be a {expected}, got {record[key]!r:.60}')


def _fit_dict(result) -> Dict[str, Optional[float]]:
    return {k: _json_float(v) for k, v in result.to_dict().items()}


def fit_one(spatial: np.ndarray, fit_gabor: bool, fit_log: bool, starts: int) -> Dict[str, Any]:
    """The fits of one 2-D luminance filter (the record's fields but index, colour and achromatic fraction)."""
    ori = fits.spectral_orientation(spatial)
    record: Dict[str, Any] = {'osi': _json_float(ori.osi), 'theta': _json_float(ori.theta),
                              'edge_theta': _json_float(ori.edge_theta),
                              'gabor': None, 'log': None, 'dog': None, 'rsi': None, 'rot90': None, 'class': None}
    gabor = fits.fit_gabor(spatial, starts=starts) if fit_gabor else None
    log = fits.fit_log(spatial) if fit_log else None
    if gabor is not None:
        record['gabor'] = _fit_dict(gabor)
    if log is not None:
        record['log'] = _fit_dict(log)
        record['dog'] = _fit_dict(fits.fit_dog(spatial))
        record['rsi'] = _json_float(fits.radial_symmetry_index(spatial, (log.x0, log.y0)))
        if spatial.shape[0] == spatial.shape[1]:
            record['rot90'] = _json_float(fits.rot90_correlation(spatial))
    if gabor is not None or log is not None:
        record['class'] = fits.classify(gabor.error if gabor else None, log.error if log else None)
    return record


def fit_bank(
        weight: Any,
        starts: int = fits.GABOR_STARTS,
        progress: bool = True,
        desc: str = 'filters',
) -> BankFits:
    """Fit every filter of a (N, C, H, W) bank on its luminance part; tqdm progress per filter."""
    from tqdm.auto import tqdm

    lum = fits.luminance(weight)
    n, h, w = lum.spatial.shape
    refused: Dict[str, str] = {}
    for name, minimum in (('gabor', fits.MIN_GABOR_KERNEL), ('log', fits.MIN_LOG_KERNEL)):
        if min(h, w) < minimum:
            refused[name] = (f'{"Gabor" if name == "gabor" else "LoG and DoG"} fits need kernels of at least '
                             f'{minimum}x{minimum}, these are {h}x{w}')
    records = []
    for i in tqdm(range(n), desc=desc, unit='filter', disable=not progress, leave=False):
        record = {'index': i, 'achromatic_fraction': float(lum.achromatic_fraction[i]),
                  'colour': [float(v) for v in lum.colour[i]]}
        record.update(fit_one(lum.spatial[i], 'gabor' not in refused, 'log' not in refused, starts))
        records.append(record)
    return BankFits(records, [h, w], refused, starts)
