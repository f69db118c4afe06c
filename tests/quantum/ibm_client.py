#!/usr/bin/env python3
"""Submit a SamplerV2 and an EstimatorV2 job (each a parameter sweep) with
qiskit-ibm-runtime, the way an agent would, and print one JSON line per job
with what the SDK sent: the ground truth the gateway's events are checked
against.

usage: QISKIT_IBM_TOKEN=... ibm_client.py RUNTIME_URL IAM_URL BACKEND [--session]
RUNTIME_URL is where the SDK sends Qiskit Runtime calls (the gateway's route);
IAM_URL is the IBM Cloud IAM endpoint. The API key comes from the
environment, as an agent would be given it (never on a command line).
"""
import json
import os
import sys

import numpy as np
from qiskit.circuit import Parameter, QuantumCircuit
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_ibm_runtime import EstimatorV2, QiskitRuntimeService, SamplerV2, Session

runtime_url, iam_url, backend_name = sys.argv[1:4]
token = os.environ["QISKIT_IBM_TOKEN"]
use_session = "--session" in sys.argv[4:]
os.environ["IAM_URL"] = iam_url
# Offline harness: no IBM Cloud Global Search (instance lookup) on loopback.
os.environ["QISKIT_FUNCTIONS_EXPERIMENTAL"] = "1"

service = QiskitRuntimeService(
    channel="ibm_quantum_platform",
    token=token,
    instance="crn:v1:bluemix:public:quantum-computing:us-east:a/0000:1111::",
    url=iam_url,
    # the documented hook that says where the Runtime API is: the gateway
    url_resolver=lambda *args, **kwargs: runtime_url,
)
backend = service.backend(backend_name)
pm = generate_preset_pass_manager(optimization_level=1, backend=backend)


def sent(primitive, job, isa, values, shots):
    print(json.dumps({
        "primitive": primitive,
        "job_id": job.job_id(),
        "backend": backend_name,
        "qubits": isa.num_qubits,
        "instructions": len(isa.data),
        "parameters": isa.num_parameters,
        "bindings": int(np.prod(values.shape[:-1])),
        "shots": shots,
    }), flush=True)
    job.status()  # one status poll through the gateway


def run(mode):
    # Sampler: a 3-qubit entangler with two angles, swept over 8 x 2 values
    theta, phi = Parameter("theta"), Parameter("phi")
    qc = QuantumCircuit(3)
    qc.ry(theta, 0)
    qc.cx(0, 1)
    qc.rz(phi, 1)
    qc.cx(1, 2)
    qc.measure_all()
    isa = pm.run(qc)
    values = np.linspace(0, np.pi, 16).reshape(8, 2)
    job = SamplerV2(mode=mode).run([(isa, values)], shots=512)
    sent("sampler", job, isa, values, 512)

    # Estimator: a 2-qubit ansatz, a 20-point sweep of its 2 parameters
    a, b = Parameter("a"), Parameter("b")
    qc = QuantumCircuit(2)
    qc.rx(a, 0)
    qc.ry(b, 1)
    qc.cz(0, 1)
    isa = pm.run(qc)
    obs = SparsePauliOp("ZZ").apply_layout(isa.layout)
    values = np.random.default_rng(7).uniform(0, np.pi, size=(20, 2))
    est = EstimatorV2(mode=mode)
    est.options.default_shots = 2000
    job = est.run([(isa, obs, values)])
    sent("estimator", job, isa, values, 2000)


if use_session:
    with Session(backend=backend) as session:
        run(session)
else:
    run(backend)
