"""Public key lines, read exactly as sshd reads them, and edits that lose nothing.

The REST API lists the keys that may log in and removes them on request. If
it read a line differently from sshd, a key could log in without being listed,
or outlive its removal. So every line is read with sshd's own rules (OpenSSH
9.x: auth2-pubkeyfile.c, sshkey.c, auth-options.c, base64.c), one concern per
module:

grammar.py   an authorized_keys line: where the key and the options are, and
             what the options must be for sshd to take the line (parse_key for
             a line sent to the API, parse_file_line for a line of a file)
blobs.py     the key data in a line: base64 as b64_pton() takes it, and a key
             valid for its type (RSA sizes, points on their curves)
libc.py      the C library's parsers that sshd calls on option values
             (strtoll, glibc's strptime, getservbyname, mktime), emulated
edits.py     the files: the keys an authorized_keys file lets in, and adds and
             removals that hold a lock from reading to writing
"""
