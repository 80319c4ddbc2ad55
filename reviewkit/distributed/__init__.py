"""What ``reviewkit.ray`` runs on Ray: the scoring actor and the resumable output folder.

Kept apart from :mod:`reviewkit.ray` (the public entry point) so each concern stays one
module; both import Ray and pyarrow, so nothing here is imported by ``import reviewkit``.
"""
