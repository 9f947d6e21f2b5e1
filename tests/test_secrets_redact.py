from shadow_burnin.secrets import REDACTED, redact


def test_known_secret_replaced_everywhere():
    assert redact("key=sk-abcdef and again sk-abcdef", ["sk-abcdef"]) == (
        f"key={REDACTED} and again {REDACTED}")


def test_short_secrets_left_alone():
    assert redact("a abc", ["a", "abc", ""]) == "a abc"


def test_bearer_pattern_without_known_secret():
    out = redact("http-429: retry-after Bearer xyz.123-abc", [])
    assert "xyz.123-abc" not in out
    assert out == f"http-429: retry-after Bearer {REDACTED}"


def test_longest_secret_first():
    assert redact("supersecret", ["secret", "supersecret"]) == REDACTED
