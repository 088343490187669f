"""Tables for the page: a list of rows or a DataFrame shown with readable headers, counts
as integers, yes/no instead of True/False, 3 significant digits and no wrapping cells."""
from __future__ import annotations

import math
import numbers
import re

import numpy as np

__all__ = ["table"]


# --------------------------------------------------------------------------------------------
# Tables for the page.

def _table_number(x) -> str:
    """3 significant digits, no exponent below 1000, thousands separated above."""
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    text = f"{x:.3g}"
    if "e" in text and abs(x) >= 1e-4:
        digits = 2 - math.floor(math.log10(abs(x)))
        text = f"{x:.{digits}f}"
    return text


def _table_header(key, names) -> str:
    if isinstance(key, tuple):
        return ", ".join(h for h in (_table_header(k, names) for k in key) if h)
    if names and key in names:
        return str(names[key])
    text = str(key)
    return text.replace("_", " ") if re.fullmatch(r"[A-Za-z0-9]+(_[A-Za-z0-9]+)+", text) else text


def table(data, *, names: dict | None = None):
    """A pandas Styler for display() of a table on the page: `data` is a DataFrame, a list of
    row dicts or a dict of column dicts. Integer-valued columns print as integers, booleans as
    yes/no, other floats with 3 significant digits, missing values as n/a (numbers do not wrap,
    right-aligned); snake_case headers become words and `names` (e.g. method key -> display name) renames headers and string cells.
    A meaningful index (a pivot table's, say) becomes ordinary columns; no index column shows."""
    import pandas as pd

    df = data.copy() if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    if not isinstance(df.index, pd.RangeIndex) or any(n is not None for n in df.index.names):
        df.index = df.index.set_names([n if n is not None else "" for n in df.index.names])
        df = df.reset_index()
    df.columns = [_table_header(c, names) for c in df.columns]
    formats, numeric = {}, []
    for col in df.columns:
        values = df[col]
        present = values.dropna()
        if len(present) and all(isinstance(v, (bool, np.bool_)) for v in present):
            formats[col] = lambda v: "n/a" if v is None or v != v else ("yes" if v else "no")
        elif len(present) and all(isinstance(v, numbers.Real) for v in present):
            integral = all(float(v).is_integer() for v in present)
            numeric.append(col)
            formats[col] = (lambda v, integral=integral: "n/a" if v is None or v != v
                            else (f"{int(v):d}" if integral else _table_number(float(v))))
        elif names:
            formats[col] = lambda v: str(names.get(v, v)) if isinstance(v, str) else (
                "n/a" if v is None or v != v else str(v))
        else:
            formats[col] = lambda v: "n/a" if v is None or (isinstance(v, float) and v != v) else str(v)
    styler = df.style.format(formats).hide(axis="index")
    styler = styler.set_table_styles([{"selector": "th", "props": [("white-space", "nowrap")]}])
    if numeric:                                 # numbers never wrap; long text may
        styler = styler.set_properties(subset=numeric, **{"white-space": "nowrap", "text-align": "right"})
    return styler
