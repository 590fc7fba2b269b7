"""SMS segment counting: GSM-7 (with its two-septet extension characters) and UCS-2."""

import pytest

from campaigns.channels.sms import sms_length


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("", "GSM-7", 0, 0),
        ("Soldes d'hiver : -30 % chez nous !", "GSM-7", 34, 1),
        ("é" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # each euro sign takes two septets
        ("€" * 81, "GSM-7", 162, 2),
        ("Soldes ç'est parti", "UCS-2", 18, 1),  # a lower-case ç is not in GSM-7
        ("ê" * 70, "UCS-2", 70, 1),
        ("ê" * 71, "UCS-2", 71, 2),
        ("ê" * 134, "UCS-2", 134, 2),
        ("ê" * 135, "UCS-2", 135, 3),
        ("🎁" * 35, "UCS-2", 70, 1),  # an emoji is two UTF-16 code units
    ],
)
def test_segments(text, encoding, units, segments):
    length = sms_length(text)
    assert (length.encoding, length.units, length.segments) == (encoding, units, segments)
