"""Vietnamese text helpers: legacy encodings (TCVN3, VNI) and their mojibake."""
