"""Reading small kernel files (/proc, /sys): missing or unreadable means None."""


def read_text(path, default=None):
    try:
        with open(path) as stream:
            return stream.read()
    except (OSError, UnicodeDecodeError):
        return default


def read_int(path):
    text = read_text(path)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None
