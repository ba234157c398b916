from danlu.text import detect_language, non_text_share, normalize_text


def test_nfc_and_fullwidth_letters_digits_but_not_chinese_punctuation():
    assert normalize_text("Ｅ\u0301ＰＳ为１２元，增长５％！") == "ÉPS为12元，增长5％！"


def test_invisible_and_control_characters_are_removed():
    assert normalize_text("a\u200bb\u200dc\ufeffd\x07e\u202ef") == "abcdef"


def test_whitespace_collapses_outside_code_blocks_only():
    text = "第一行   有\t空格\r\n\n\n\n第二行  \n```python\ndef f():\n    return  1\n```\n  end  "
    assert normalize_text(text) == (
        "第一行 有 空格\n\n第二行\n```python\ndef f():\n    return  1\n```\nend"
    )


def test_unclosed_fence_keeps_its_indentation():
    assert normalize_text("x\n```\n  a  b") == "x\n```\n  a  b"


def test_language_by_script():
    assert detect_language("什么是市盈率？市盈率是股价除以每股收益。") == "zh"
    assert detect_language("What is a bond? A bond is a loan to an issuer.") == "en"
    assert detect_language("Что такое облигация?") == "other"


def test_non_text_share_flags_base64_blobs():
    blob = "QUJD" * 200
    assert non_text_share("请看附件：" + blob) > 0.9
    assert non_text_share("一段正常的中文金融问答。") == 0.0
