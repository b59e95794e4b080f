"""Matrix notation (``A x + A^T x``, ``X^T diag(s) X``), both ways.

* :mod:`~einderiv.matrix.syntax`: the grammar of matrix-notation text and its frozen nodes;
* :mod:`~einderiv.matrix.translate`: a matrix-notation expression read as index notation
  (shapes inferred from the input ranks), for claims;
* :mod:`~einderiv.matrix.reading`: a program written in matrix notation read as input (ranks
  declared or inferred);
* :mod:`~einderiv.matrix.tree`: the tree that matrix notation is printed from, and its printer;
* :mod:`~einderiv.matrix.form`: a result in index notation written as that tree.
"""
