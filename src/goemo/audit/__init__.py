"""Which labels are wrong: a label audit from cross-fitted predictions (``goemo audit``).

`.runner` trains the fold models, `.quality` scores every (text, label) pair, `.page` writes the review page.

>>> from goemo.audit import label_quality
"""

from goemo.audit.quality import KINDS, LabelQuality, label_quality

__all__ = ["KINDS", "LabelQuality", "label_quality"]
