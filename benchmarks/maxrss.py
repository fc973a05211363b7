"""Run a command and report its peak memory (KiB) on the last line of stderr."""
import resource
import subprocess
import sys

done = subprocess.run(sys.argv[1:])
print(f"MAXRSS_KIB={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}", file=sys.stderr)
sys.exit(done.returncode)
