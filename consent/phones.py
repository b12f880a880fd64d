"""Phone numbers: normalized to E.164, then kept only as a keyed hash.

The hash key is derived from the master key, so the hashes cannot be reversed by
trying every number without it (there are only ~10^11 plausible numbers).
"""

from __future__ import annotations

import hashlib
import hmac
import re

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_SEPARATORS = re.compile(r"[\s().-]")


def normalize_phone(text: str) -> str:
    """``+212 6-12 34 56 78`` → ``+212612345678``; ValueError if it is not E.164."""
    candidate = _SEPARATORS.sub("", text.strip())
    if candidate.startswith("00"):
        candidate = "+" + candidate[2:]
    if candidate.lower().startswith(("sip:", "tel:")):
        candidate = candidate.split(":", 1)[1].split("@", 1)[0].split(";", 1)[0]
    if not _E164.match(candidate):
        raise ValueError("not an E.164 phone number (expected +<country code><number>)")
    return candidate


def hash_phone(key: bytes, text: str) -> str:
    """Keyed hash of the normalized number: what callrec stores instead of the number."""
    return hmac.new(key, normalize_phone(text).encode(), hashlib.sha256).hexdigest()


def hash_party(key: bytes, text: str) -> str:
    """Keyed hash of a call's party: its E.164 number, else its address's user part.

    SIPREC parties are not always numbers (an extension, ``sip:alice@example.com``);
    they are still recorded, hashed over what names them as written. Such a hash
    cannot match a do-not-record list, whose entries are all numbers.
    """
    try:
        return hash_phone(key, text)
    except ValueError:
        return hmac.new(key, party_name(text).encode(), hashlib.sha256).hexdigest()


def party_name(text: str) -> str:
    """The user part of an address as written: ``<sip:Alice@host;x=y>`` → ``Alice``.

    Without a user part (``sip:host``) it is the host; ValueError if nothing is left.
    """
    name = text.strip()
    if "<" in name and ">" in name:  # a display name before the address
        name = name[name.index("<") + 1 : name.index(">")]
    scheme, colon, rest = name.partition(":")
    if colon and scheme.lower() in ("sip", "sips", "tel"):
        name = rest
    name = name.split(";", 1)[0].split("?", 1)[0]
    user, at, host = name.rpartition("@")
    name = (user if at and user else host if at else name).strip()
    if not name:
        raise ValueError(f"no party in {text!r}")
    return name


# Country calling codes (ITU-T E.164) → ISO 3166-1 alpha-2, for the countries callrec's
# rule book knows and the common ones. A code shared by several countries maps to the
# one the number plan belongs to, except +1 (NANP): which state or country a +1 number
# is in cannot be told from it, so it maps to nothing (unknown: all-party).
_CALLING_CODES: dict[str, str] = {
    "7": "RU", "20": "EG", "27": "ZA", "30": "GR", "31": "NL", "32": "BE", "33": "FR",
    "34": "ES", "36": "HU", "39": "IT", "40": "RO", "41": "CH", "43": "AT", "44": "GB",
    "45": "DK", "46": "SE", "47": "NO", "48": "PL", "49": "DE", "51": "PE", "52": "MX",
    "53": "CU", "54": "AR", "55": "BR", "56": "CL", "57": "CO", "58": "VE", "60": "MY",
    "61": "AU", "62": "ID", "63": "PH", "64": "NZ", "65": "SG", "66": "TH", "81": "JP",
    "82": "KR", "84": "VN", "86": "CN", "90": "TR", "91": "IN", "92": "PK", "93": "AF",
    "94": "LK", "95": "MM", "98": "IR", "211": "SS", "212": "MA", "213": "DZ", "216": "TN",
    "218": "LY", "220": "GM", "221": "SN", "222": "MR", "223": "ML", "224": "GN",
    "225": "CI", "226": "BF", "227": "NE", "228": "TG", "229": "BJ", "230": "MU",
    "231": "LR", "232": "SL", "233": "GH", "234": "NG", "235": "TD", "236": "CF",
    "237": "CM", "241": "GA", "242": "CG", "243": "CD", "244": "AO", "249": "SD",
    "250": "RW", "251": "ET", "252": "SO", "253": "DJ", "254": "KE", "255": "TZ",
    "256": "UG", "257": "BI", "258": "MZ", "260": "ZM", "261": "MG", "263": "ZW",
    "264": "NA", "265": "MW", "266": "LS", "267": "BW", "268": "SZ", "351": "PT",
    "352": "LU", "353": "IE", "354": "IS", "355": "AL", "356": "MT", "357": "CY",
    "358": "FI", "359": "BG", "370": "LT", "371": "LV", "372": "EE", "373": "MD",
    "374": "AM", "375": "BY", "376": "AD", "377": "MC", "378": "SM", "380": "UA",
    "381": "RS", "382": "ME", "383": "XK", "385": "HR", "386": "SI", "387": "BA",
    "389": "MK", "420": "CZ", "421": "SK", "423": "LI", "852": "HK", "853": "MO",
    "855": "KH", "856": "LA", "880": "BD", "886": "TW", "960": "MV", "961": "LB",
    "962": "JO", "963": "SY", "964": "IQ", "965": "KW", "966": "SA", "967": "YE",
    "968": "OM", "970": "PS", "971": "AE", "972": "IL", "973": "BH", "974": "QA",
    "975": "BT", "976": "MN", "977": "NP", "992": "TJ", "993": "TM", "994": "AZ",
    "995": "GE", "996": "KG", "998": "UZ",
}  # fmt: skip

# Parts of a shared plan that are countries of their own (landline area codes): a number
# there must not take the plan country's rule. Longest prefix wins.
_AREAS: dict[str, str] = {
    "441481": "GG", "441534": "JE", "441624": "IM", "76": "KZ", "77": "KZ",
}  # fmt: skip


def country_of(number: str) -> str | None:
    """The ISO country of an E.164 number's calling code; None if unknown or not E.164.

    ``+1`` numbers answer None: the NANP spans the US states, Canada and the Caribbean.
    This is where the number belongs, not where its holder is (a roaming mobile).
    """
    try:
        digits = normalize_phone(number)[1:]
    except ValueError:
        return None
    for length in range(6, 1, -1):
        if (area := _AREAS.get(digits[:length])) is not None:
            return area
    # Calling codes are prefix-free: at most one of these matches.
    for length in (1, 2, 3):
        if (country := _CALLING_CODES.get(digits[:length])) is not None:
            return country
    return None
