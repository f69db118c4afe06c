#!/usr/bin/env python3
"""Create two Amazon Braket tasks with amazon-braket-sdk, the way an agent
would: a circuit with FreeParameters bound once, and a program set sweeping
them. Prints one JSON line per task with what the SDK sent (ground truth).

usage: braket_client.py BRAKET_ENDPOINT
The endpoint is the documented BRAKET_ENDPOINT setting: the gateway's route.
"""
import json
import os
import sys

os.environ["BRAKET_ENDPOINT"] = sys.argv[1]
os.environ.setdefault("AWS_ACCESS_KEY_ID", "AKIAPLACEHOLDER00000")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "placeholder-secret")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import boto3
from braket.aws import AwsQuantumTask, AwsSession
from braket.circuits import Circuit, FreeParameter
from braket.program_sets import CircuitBinding, ProgramSet

SV1 = "arn:aws:braket:::device/quantum-simulator/amazon/sv1"
session = AwsSession(boto_session=boto3.Session(region_name="us-east-1"))
alpha, beta = FreeParameter("alpha"), FreeParameter("beta")
circuit = Circuit().rx(0, alpha).rz(1, beta).h(0).cnot(0, 1)
out = ("amazon-braket-us-east-1-123456789012", "tasks")

task = AwsQuantumTask.create(session, SV1, circuit, out, shots=100,
                             inputs={"alpha": 0.1, "beta": 0.2}, tags={"agent": "demo"})
print(json.dumps({"kind": "program", "task_arn": task.id, "device": SV1, "qubits": circuit.qubit_count,
                  "instructions": len(circuit.instructions) + circuit.qubit_count,
                  "parameters": 2, "bindings": 1, "shots": 100}), flush=True)
task.state()

values = [0.0, 0.25, 0.5, 0.75, 1.0]
program_set = ProgramSet(CircuitBinding(circuit, input_sets={"alpha": values, "beta": values}),
                         shots_per_executable=50)
task = AwsQuantumTask.create(session, SV1, program_set, out, shots=program_set.total_shots)
print(json.dumps({"kind": "program_set", "task_arn": task.id, "device": SV1, "qubits": 2,
                  "parameters": 2, "bindings": len(values), "shots": 50 * len(values)}), flush=True)
task.state()
