"""Log reading: line framing, file identity and watermarks, entry normalisation."""
