"""The kinds of real ids that screening pseudonymizes (`synthdata.privacy`): a real image, a
patient group, a reference file. Every record and report names real data by these."""

REAL_KIND = "real-image"
GROUP_KIND = "patient-group"
SKIPPED_KIND = "reference-file"
