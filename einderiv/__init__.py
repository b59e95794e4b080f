"""einderiv: Einstein-notation tensor derivatives, compiled to einsum.

>>> import einderiv
>>> print(einderiv.diff("K_pq = R_mp R_mq", wrt="R"))
dK_pq/dR_ij = delta_jp R_iq + R_ip delta_jq
"""

from . import codegen, functions, limits
from .api import Compiled, Derivative, compile, diff, evaluate, hessian, jacobian
from .checking import CheckResult, check
from .errors import (
    DifferentiationError,
    EinderivError,
    EinderivWarning,
    EvaluationError,
    IndexRuleError,
    ParseError,
    UsageError,
)
from .gradients import Gradients, grad, value_and_grad
from .limits import Limits, limited
from .matrix.form import NoMatrixForm
from .matrix.reading import parse
from .products import hessian_diag, hvp, jvp, vjp

__version__ = "0.1.0"

__all__ = [
    "CheckResult",
    "Compiled",
    "Derivative",
    "DifferentiationError",
    "EinderivError",
    "EinderivWarning",
    "EvaluationError",
    "Gradients",
    "IndexRuleError",
    "Limits",
    "NoMatrixForm",
    "ParseError",
    "UsageError",
    "check",
    "codegen",
    "compile",
    "diff",
    "evaluate",
    "functions",
    "grad",
    "hessian",
    "hessian_diag",
    "hvp",
    "jacobian",
    "jvp",
    "limited",
    "limits",
    "parse",
    "value_and_grad",
    "vjp",
]
