"""The deterministic plan: every sample's label, prompt, attributes and seed fixed before any
GPU work. `rows` derives and writes the plan, `seeds` holds the seeded draws it is made of,
`load` reads a spec for it (catalogue entry, cohort table), and `cohort/` is the cohort
source of plan rows. Import-light: each module loads what it needs."""
