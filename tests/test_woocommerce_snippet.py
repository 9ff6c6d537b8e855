"""The WooCommerce mu-plugin (integrations/woocommerce/neuroon-clicks.php) and its copy in the README."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SNIPPET = ROOT / "integrations" / "woocommerce" / "neuroon-clicks.php"
README = ROOT / "README.md"


def readme_copy() -> str:
    """The ```php block that follows the README's link to the snippet, without the list's indent."""
    text = README.read_text()
    start = text.index("```php\n", text.index(str(SNIPPET.relative_to(ROOT)))) + len("```php\n")
    lines = text[start:].splitlines(keepends=True)
    block = lines[: next(i for i, line in enumerate(lines) if line.strip() == "```")]
    return "".join(line[3:] if line.strip() else "\n" for line in block)


def test_the_readme_shows_the_snippet_verbatim() -> None:
    assert readme_copy() == SNIPPET.read_text()
