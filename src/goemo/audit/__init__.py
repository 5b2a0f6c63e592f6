"""Which labels are wrong: a label audit from cross-fitted predictions (``goemo audit``).

`goemo.audit.runner` trains K fold models (ordinary goemo runs, each holding one fold of the
texts out) and gathers their out-of-fold probabilities; `goemo.audit.quality` scores every
(text, label) pair in the manner of confident learning; `goemo.audit.page` writes the review
page, whose export feeds ``goemo train --corrections`` and ``--exclude``.

>>> from goemo.audit import label_quality
"""

from goemo.audit.quality import KINDS, LabelQuality, label_quality

__all__ = ["KINDS", "LabelQuality", "label_quality"]
