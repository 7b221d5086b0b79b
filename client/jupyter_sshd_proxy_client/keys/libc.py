"""The C library's parsers that sshd calls on option values, emulated.

sshd reads a few option values of authorized_keys lines with the C library:
numbers with strtoll() (through OpenSSH's strtonum()), ports with
getservbyname(), times with glibc's strptime(), timegm() and mktime(). A
line already in a file is read as they read it, quirks included (leading
white space, a sign, a field of one digit), so that the keys listed are the
keys sshd lets in.
"""

from __future__ import annotations

import re
import socket
import time

C_SPACE = " \t\n\v\f\r"  # isspace() in the C locale (skipped inside base64 too)
C_SPACE_BYTES = tuple(bytes([char]) for char in C_SPACE.encode())  # the same, as bytes
# tolower() in the C locale: only A-Z change
ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def c_number(value: str, low: int, high: int) -> int | None:
    """OpenSSH's strtonum(): C's strtoll() in base 10 (leading white space
    and a sign allowed, nothing after the digits), within [low, high]."""
    match = re.fullmatch(r"[ \t\n\v\f\r]*([+-]?[0-9]+)", value, re.ASCII)
    if match is None:
        return None
    number = int(match.group(1))
    return number if low <= number <= high else None


def c_port(value: str) -> int:
    """a2port(): a port number, or a TCP service name (getservbyname); -1 if neither."""
    number = c_number(value, 0, 65535)
    if number is not None:
        return number
    try:
        return socket.getservbyname(value, "tcp")
    except (OSError, UnicodeError, ValueError):
        return -1


TIME_FIELDS = {  # glibc strptime(): (lowest, highest, most digits)
    "Y": (0, 9999, 4),
    "m": (1, 12, 2),
    "d": (1, 31, 2),
    "H": (0, 23, 2),
    "M": (0, 59, 2),
    "S": (0, 61, 2),
}


def absolute_time(value: bytes) -> int | None:
    """parse_absolute_time() with glibc's strptime(), timegm() and mktime():
    the time in seconds (<= 0 is refused by sshd), or None if it cannot be read.
    A local time is read in this process's time zone, sshd's too."""
    size, utc = len(value), False
    if size > 1 and value[-1:].lower() == b"z":
        size, utc = size - 1, True
    elif size > 3 and value[-3:].lower() == b"utc":
        size, utc = size - 3, True
    if size not in (8, 12, 14):
        return None
    # sshd puts the digits into a string that strptime() can read.
    text = b"%s-%s-%s" % (value[:4], value[4:6], value[6:8])
    form = "%Y-%m-%d"
    if size > 8:
        text += b"T%s:%s" % (value[8:10], value[10:12])
        form += "T%H:%M"
    if size > 12:
        text += b":%s" % value[12:14]
        form += ":%S"
    fields = _c_strptime(text, form)
    if fields is None:
        return None
    year, month, day, hour, minute, second = [*fields, 0, 0, 0][:6]
    if utc:  # timegm(): days beyond the month's end roll over
        days = _days_from_civil(year, month) + day - 1
        return ((days * 24 + hour) * 60 + minute) * 60 + second
    try:  # tm_isdst is 0, as sshd leaves it
        return int(time.mktime((year, month, day, hour, minute, second, 0, 0, 0)))
    except (OverflowError, ValueError):
        return None


def _c_strptime(text: bytes, form: str) -> list[int] | None:
    """glibc's strptime() for the numeric fields of TIME_FIELDS and literal
    characters; the whole text must be read."""
    values, pos, index = [], 0, 0
    while index < len(form):
        if form[index] != "%":
            if text[pos : pos + 1] != form[index].encode():
                return None
            pos, index = pos + 1, index + 1
            continue
        low, high, digits = TIME_FIELDS[form[index + 1]]
        index += 2
        while text[pos : pos + 1] in C_SPACE_BYTES:
            pos += 1
        if not text[pos : pos + 1].isdigit():
            return None
        number = 0
        while True:
            number = number * 10 + text[pos] - 48
            pos, digits = pos + 1, digits - 1
            if not (digits > 0 and number * 10 <= high and text[pos : pos + 1].isdigit()):
                break
        if not low <= number <= high:
            return None
        values.append(number)
    return values if pos == len(text) else None


def _days_from_civil(year: int, month: int) -> int:
    """Days from 1970-01-01 to the first of that month (proleptic Gregorian)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468
