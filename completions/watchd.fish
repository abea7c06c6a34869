complete -c watchd -s s -l stall -d 'Stop the command when its process tree shows no evidence of life for DURATION' -r
complete -c watchd -s t -l timeout -d 'Stop the command after DURATION of wall time' -r
complete -c watchd -l interval -d 'How often to probe the process tree through /proc' -r
complete -c watchd -l evidence -d 'What counts as evidence of life: cpu (a new process counts with it), io, notify, gpu' -r -f -a "cpu\t''
io\t''
notify\t''
gpu\t''"
complete -c watchd -l gpu-evidence -d 'Whose GPU work counts as gpu evidence: the tree\'s processes, or any on a visible GPU (containers); WATCHD_NVML_LIBRARY names another NVML library' -r -f -a "process\t''
device\t''"
complete -c watchd -l heartbeat -d 'A file whose size or modification time changed since the last probe is evidence of life (repeatable)' -r -F
complete -c watchd -l min-cpu -d 'CPU growth slower than CORES over a probe window is not evidence of life' -r
complete -c watchd -l cpu-limit -d 'Stop the command when its tree uses too much of CORES (see --cpu-soft, --cpu-hard)' -r
complete -c watchd -l cpu-soft -d 'Fraction of --cpu-limit that fires cpu-soft when held for --cpu-soft-for' -r
complete -c watchd -l cpu-soft-for -d 'How long the tree must stay at --cpu-soft to fire cpu-soft (at least one probe window)' -r
complete -c watchd -l cpu-hard -d 'Fraction of --cpu-limit that fires cpu-hard in a single probe window' -r
complete -c watchd -l max-rss -d 'Stop the command when its tree\'s resident memory exceeds SIZE (512M, 2G, 1.5GiB)' -r
complete -c watchd -l health-cmd -d 'Run `sh -c CMD` (with WATCHD_PID set) as the health check; exit 0 passes' -r
complete -c watchd -l health-url -d 'GET this http:// URL as the health check; a status from 200 to 399 passes' -r
complete -c watchd -l health-interval -d 'Time from the end of one health check to the start of the next' -r
complete -c watchd -l health-timeout -d 'A health check that takes longer fails (a command is killed with its process group)' -r
complete -c watchd -l health-retries -d 'Consecutive failed health checks that fire unhealthy' -r
complete -c watchd -l start-period -d 'Failures before the first passing check and within this period do not count' -r
complete -c watchd -l start-interval -d 'Time between health checks during --start-period' -r
complete -c watchd -l ready-timeout -d 'Fire not-ready when the command is not ready DURATION after it started' -r
complete -c watchd -l restart -d 'Start the command again after it ends: no, on-failure or always' -r -f -a "no\t''
on-failure\t''
always\t''"
complete -c watchd -l restart-max -d 'At most N restarts; then exit with the last run\'s status' -r
complete -c watchd -l restart-delay -d 'Delay before the first restart; it doubles after each short run' -r
complete -c watchd -l restart-delay-max -d 'The longest delay; a run that lasts longer resets the delay' -r
complete -c watchd -l dump-signal -d 'Send SIGNAL to every process of the tree after the dump, before the stop signal' -r
complete -c watchd -l dump-cmd -d 'Run `sh -c CMD` for each process of the tree (WATCHD_PID set) before the stop signal' -r
complete -c watchd -l dump-wait -d 'How long the dump signal and commands get before the stop signal' -r
complete -c watchd -l stop-signal -d 'Signal that starts a drain' -r
complete -c watchd -l stop-scope -d 'Who gets the stop signal: the whole tree, or the main child only' -r -f -a "tree\t''
child\t''"
complete -c watchd -l stop-cmd -d 'Run `sh -c CMD` (with WATCHD_PID set) instead of sending the stop signal' -r
complete -c watchd -l grace -d 'How long to wait after the stop signal before killing' -r
complete -c watchd -l kill-signal -d 'Signal sent to what is left of the tree when the grace runs out' -r
complete -c watchd -l success-exit-status -d 'Exit 0 when the child ends with one of these exit codes or signals (repeatable; e.g. 143,TERM)' -r
complete -c watchd -l exit-code-on-stop -d 'Exit with N instead of the child\'s status when watchd stopped the child (124: like timeout)' -r
complete -c watchd -l rewrite-signal -d 'Forward signal FROM as TO, or drop it with FROM=none (repeatable; e.g. TERM=QUIT)' -r
complete -c watchd -l forward-to -d 'Where forwarded signals go: the child, its process group, or every process of the tree' -r -f -a "child\t''
group\t''
tree\t''"
complete -c watchd -l pdeathsig -d 'Signal the child gets when watchd dies' -r
complete -c watchd -l cgroup -d 'Run the command in a cgroup of its own: auto (where watchd\'s cgroup is delegated to it), on (required), off' -r -f -a "auto\t'Only where watchd\'s cgroup is its to manage: delegated to it, or PID 1 at the root of its cgroup namespace'
on\t'Required: if it cannot be had, watchd exits 125 without starting the command'
off\t'Never: the tree is what /proc shows'"
complete -c watchd -l events -d 'Write JSON-lines events to PATH (- for stderr)' -r -F
complete -c watchd -l metrics-file -d 'Rewrite PATH after each probe with Prometheus text-format metrics' -r -F
complete -c watchd -l notify -d 'Give the command a notify socket (NOTIFY_SOCKET, sd_notify: READY=1, WATCHDOG=1, ...)'
complete -c watchd -l no-cleanup -d 'Leave the rest of the tree running when the main child exits'
complete -c watchd -l no-subreaper -d 'Do not become a child subreaper (orphans escape the tree)'
complete -c watchd -s v -l verbose -d 'Also report start, forwarded signals, reaped orphans and the exit'
complete -c watchd -s q -l quiet -d 'Print nothing but usage errors'
complete -c watchd -s h -l help -d 'Print help (see more with \'--help\')'
complete -c watchd -s V -l version -d 'Print version'
