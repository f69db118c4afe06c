OPENQASM 2.0;
include "qelib1.inc";
gate maj a,b,c { cx c,b; cx c,a; ccx a,b,c; }
qreg q[3];
creg c[3];
h q;
maj q[0],q[1],q[2];
barrier q;
if (c == 5) x q[1];
measure q -> c;
