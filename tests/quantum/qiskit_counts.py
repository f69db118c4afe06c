#!/usr/bin/env python3
"""Qiskit's own counts for OpenQASM 2 files: the reference the gateway's
QASM scanner is checked against. Prints one JSON object: path ->
[qubits, len(circuit.data), circuit.depth(), two-qubit operations] or the
error text when Qiskit cannot load the file.

usage: qiskit_counts.py FILE...
"""
import json
import sys

from qiskit import qasm2

out = {}
for path in sys.argv[1:]:
    try:
        c = qasm2.load(path, include_path=qasm2.LEGACY_INCLUDE_PATH,
                       custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS, strict=False)
        two = sum(1 for i in c.data if len(i.qubits) == 2 and i.operation.name != "barrier")
        out[path] = [c.num_qubits, len(c.data), c.depth(), two]
    except Exception as e:  # noqa: BLE001 - reported per file
        out[path] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
