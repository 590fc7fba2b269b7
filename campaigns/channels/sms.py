"""SMS: how many segments a text costs, and the provider interface (outbox by default).

A text in the GSM 03.38 alphabet (extension characters count twice) fits 160
characters in one segment, 153 per segment when split; any other character makes the
whole message UCS-2: 70 in one segment, 67 per segment when split (counted in UTF-16
code units, so an emoji counts twice).
"""

from __future__ import annotations

import dataclasses

_GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION = set("^{}\\[~]|€\f")


@dataclasses.dataclass(frozen=True)
class SmsLength:
    encoding: str  # GSM-7 | UCS-2
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int


def sms_length(text: str) -> SmsLength:
    if all(c in _GSM_BASIC or c in _GSM_EXTENSION for c in text):
        units = sum(2 if c in _GSM_EXTENSION else 1 for c in text)
        single, multi, encoding = 160, 153, "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi, encoding = 70, 67, "UCS-2"
    if units <= single:
        return SmsLength(encoding, units, 1 if units else 0)
    return SmsLength(encoding, units, -(-units // multi))
