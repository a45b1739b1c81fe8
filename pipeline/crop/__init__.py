"""The crop stage: the resize mode, and the faces mode with its detector, hair colour and repost dedup."""
