// sa_jump_fcontext(to, data): a context switch for x86_64 System V (ELF)
// that resumes the target with `ret`.
//
// Why not Boost.Context's jump_fcontext alone: it is entered with `call` but
// resumes the target with an indirect `jmp`, so each switch leaves an entry
// on the CPU's return stack buffer that no `ret` consumes, and the first
// `ret` after the switch is mispredicted. Here the switch ends with `ret`:
// it pops the entry its own `call` pushed, which predicts the right place
// whenever both sides wait at the same call site (fibers yielding to each
// other: 37 -> 19 ns per yield on the 2-CPU VM) and keeps the return stack
// balanced for the returns that follow.
//
// Contract (what makes it interchangeable with Boost's functions, so that
// contexts from make_fcontext start here and a context saved here could be
// resumed by jump_fcontext): a context is the stack pointer of a suspended
// stack holding, from that pointer up,
//   +0x00 MXCSR (4 bytes)  +0x04 x87 control word (2)  +0x08 unused
//   +0x10 r12  +0x18 r13  +0x20 r14  +0x28 r15  +0x30 rbx  +0x38 rbp
//   +0x40 the address to resume at
// which are the callee-saved registers of the ABI (with the control bits of
// MXCSR and the x87 control word). The result is a transfer_t {from, data}
// in rax:rdx, `from` being the context just suspended; rdi and rsi also
// carry it, as the arguments of a fresh context's entry function.
//
// Built from pushes so that the stack layout above is visible in the code.
// Not for CET shadow stacks (not enabled on this platform): a switch would
// have to switch shadow stacks too.

#if defined(__x86_64__) && defined(__ELF__)

    .text
    .globl  sa_jump_fcontext
    .type   sa_jump_fcontext, @function
    .p2align 4
sa_jump_fcontext:
#if defined(__CET__) && (__CET__ & 1)
    endbr64
#endif
    // Suspend the caller: its return address is at 0x40 already.
    pushq   %rbp                // 0x38
    pushq   %rbx                // 0x30
    pushq   %r15                // 0x28
    pushq   %r14                // 0x20
    pushq   %r13                // 0x18
    pushq   %r12                // 0x10
    subq    $16, %rsp           // 0x00 .. 0x0f
    stmxcsr (%rsp)
    fnstcw  4(%rsp)
    movq    %rsp, %rax          // transfer_t.fctx: the context suspended

    // Resume `to` (rdi).
    movq    %rdi, %rsp
    ldmxcsr (%rsp)
    fldcw   4(%rsp)
    addq    $16, %rsp
    popq    %r12
    popq    %r13
    popq    %r14
    popq    %r15
    popq    %rbx
    popq    %rbp
    movq    %rsi, %rdx          // transfer_t.data
    movq    %rax, %rdi          // (from, data) as arguments too
    ret
    .size   sa_jump_fcontext, .-sa_jump_fcontext

#endif

    .section .note.GNU-stack, "", %progbits
