/* The host clock. Tests may freeze it and move it by hand. */
#ifndef PLANTD_CLOCK_H
#define PLANTD_CLOCK_H

#include <stdint.h>

/* Wall-clock ms since the epoch, or the fake time when one is set. */
uint64_t clock_now_ms(void);
/* Monotonic ns, for durations (never faked). */
uint64_t clock_mono_ns(void);
/* Freeze the clock at `ms`; 0 returns to the real clock. */
void clock_set_fake(uint64_t ms);
void clock_advance(uint64_t ms);

#endif
