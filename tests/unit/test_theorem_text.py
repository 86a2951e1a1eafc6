"""Statement extraction from theorem documents: ProofWiki entries lose proofs, tags, sources and categories;
plain corpora pass through unchanged."""

from __future__ import annotations

import pytest

from models.retrieval.theorem_text import bounded, is_structured, statement_for_prompt, theorem_statement, theorem_title

WITH_PROOF = r"""\section{Sum of Geometric Sequence}
Tags: Geometric Sequences, Sums of Sequences

\begin{theorem}
Let $x$ be a number such that $x \ne 1$ and let $n \in \N_{>0}$.
Then:
:$\ds \sum_{j \mathop = 0}^{n - 1} x^j = \frac {x^n - 1} {x - 1}$
\end{theorem}

\begin{proof}
Multiply both sides by $x - 1$ and telescope.
{{qed}}
\end{proof}

== Sources ==
* {{BookReference|Concrete Mathematics|1994}}
[[Category:Geometric Sequences]]
"""

TWO_THEOREMS = r"""\section{Vieta's Formulas}
Tags: Polynomial Theory

\begin{theorem}
For a monic quadratic $x^2 + b x + c$ with roots $r_1, r_2$: $r_1 + r_2 = -b$.
\end{theorem}

\begin{proof}
Expand $(x - r_1)(x - r_2)$.
\end{proof}

\begin{corollary}
The product of the roots is $c$.
\end{corollary}

\begin{proof}
Compare constant terms.
\end{proof}
"""

DEFINITION = r"""\section{Definition:Prime Number}
Tags: Prime Numbers

\begin{definition}
A '''prime number''' is a positive integer with exactly two divisors.
\end{definition}
"""

UNCLOSED = r"""\section{Euclid's Lemma}
Tags: Number Theory
\begin{theorem}
If a prime $p$ divides $a b$ then $p \divides a$ or $p \divides b$.
\begin{proof}
By Bezout's identity.
\end{proof}
"""

PROOF_ONLY_MARKER = r"""Fermat's Little Theorem: if $p$ is prime and $p \nmid a$ then $a^{p-1} \equiv 1 \pmod p$.
\begin{proof}
Consider the residues $a, 2a, \ldots$.
\end{proof}"""

WIKI_STYLE = """\\section{Pythagoras's Theorem}
Tags: Triangles
In a right triangle the square of the hypotenuse is the sum of the squares of the legs.
== Proof 1 ==
Rearrange four copies of the triangle.
"""


def test_statement_drops_proof_tags_sources_and_categories() -> None:
    statement = theorem_statement(WITH_PROOF)
    assert statement.startswith(r"\section{Sum of Geometric Sequence} \begin{theorem} Let $x$ be a number")
    assert statement.endswith(r"\frac {x^n - 1} {x - 1}$ \end{theorem}")
    for dropped in ("telescope", "Tags", "qed", "Sources", "BookReference", "Category", "\n"):
        assert dropped not in statement


def test_every_statement_block_is_kept_and_every_proof_dropped() -> None:
    statement = theorem_statement(TWO_THEOREMS)
    assert statement == (
        r"\section{Vieta's Formulas} \begin{theorem} For a monic quadratic $x^2 + b x + c$ with roots $r_1, r_2$: "
        r"$r_1 + r_2 = -b$. \end{theorem} \begin{corollary} The product of the roots is $c$. \end{corollary}"
    )
    assert "Expand" not in statement and "Compare" not in statement


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (DEFINITION, r"\section{Definition:Prime Number} \begin{definition} A '''prime number''' is a positive "
                     r"integer with exactly two divisors. \end{definition}"),
        (UNCLOSED, r"\section{Euclid's Lemma} \begin{theorem} If a prime $p$ divides $a b$ then $p \divides a$ or "
                   r"$p \divides b$. \end{theorem}"),
        (PROOF_ONLY_MARKER, r"Fermat's Little Theorem: if $p$ is prime and $p \nmid a$ then $a^{p-1} \equiv 1 \pmod p$."),
        (WIKI_STYLE, r"\section{Pythagoras's Theorem} In a right triangle the square of the hypotenuse is the sum "
                     r"of the squares of the legs."),
    ],
)
def test_other_proofwiki_shapes(document: str, expected: str) -> None:
    assert theorem_statement(document) == expected


def test_plain_documents_are_unchanged() -> None:
    plain = "Bayes' theorem: P(A|B) = P(B|A) P(A) / P(B).\nIt follows from the definition of conditional probability."
    assert not is_structured(plain)
    assert theorem_statement(plain) == plain
    assert theorem_statement("  Intermediate value theorem: ...  \n") == "Intermediate value theorem: ..."
    assert statement_for_prompt(plain) == " ".join(plain.split())


def test_a_document_that_is_all_back_matter_still_gives_text() -> None:
    assert theorem_statement("\\begin{proof}\nOnly a proof.\n\\end{proof}") == "\\begin{proof} Only a proof. \\end{proof}"


def test_title_and_bounds() -> None:
    assert theorem_title(WITH_PROOF) == "Sum of Geometric Sequence"
    assert theorem_title("no section here") is None
    assert bounded("alpha beta gamma delta", 12) == "alpha beta ..."
    assert bounded("short", 12) == "short"
    assert statement_for_prompt(WITH_PROOF, max_chars=40) == r"\section{Sum of Geometric Sequence} ..."
