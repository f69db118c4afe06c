OPENQASM 3.0;
include "stdgates.inc";
input float theta;
bit[2] b;
qubit[2] q;
ctrl @ x $0, $3; inv @ pow(2) @ s q[1];
for int i in [0:2] { rx(theta) q[0]; }
while (b[0]) { box [10ns] { h q; } }
if (b == 1) { x q[0]; } else if (b[1]) { y q[1]; } else { z q; }
b[0] = measure q[0];
bit c = measure q[1];
delay[100ns] $2;
