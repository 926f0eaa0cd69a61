"""Data package: YAML files shipped inside the wheel."""
