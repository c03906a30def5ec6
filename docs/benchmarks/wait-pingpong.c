// A two-thread ping-pong over a Unix socket pair, with the waits of docs/benchmarks/measurements-2026-12-07.md
// ("Waiting on a socket on this VM"): gcc -O2 -pthread wait-pingpong.c -o pp && ./pp MODE
// 0 blocking recv; 1 ppoll then recv; 2 ppoll with a 30 s timeout; 3 ppoll on two entries;
// 4 epoll_wait then recv; 5 a non-blocking recv, then ppoll; 6 recv(MSG_PEEK) then recv;
// 7-8 blocking recv and 1 or 3 getppid; 9+ a spin of (MODE-8)*10 us of non-blocking recv, then ppoll.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
static __thread int ep=-1;
static int mode; static _Atomic long spins_all, sleeps_all; static __thread long spins, sleeps; static int N=20000;
static void rd(int fd, char*b){
  if(mode==0){ recv(fd,b,64,0); return; }
  struct pollfd p={fd,POLLIN,0};
  struct timespec ts={30,0};
  if(mode==4){ if(ep<0){ep=epoll_create1(0); struct epoll_event e={EPOLLIN,{0}}; epoll_ctl(ep,EPOLL_CTL_ADD,fd,&e); int ev=eventfd(0,0); e.data.u64=1; epoll_ctl(ep,EPOLL_CTL_ADD,ev,&e);} struct epoll_event o[2]; epoll_wait(ep,o,2,30000); recv(fd,b,64,MSG_DONTWAIT); return;}
  if(mode==5){ if(recv(fd,b,64,MSG_DONTWAIT)>0) return; ppoll(&p,1,NULL,NULL); recv(fd,b,64,MSG_DONTWAIT); return;}
  if(mode==6){ recv(fd,b,1,MSG_PEEK); recv(fd,b,64,MSG_DONTWAIT); return;}
  if(mode==7){ recv(fd,b,64,0); getppid(); return;}
  if(mode==8){ recv(fd,b,64,0); getppid(); getppid(); getppid(); return;}
  if(mode>=9){ struct timespec a,z; clock_gettime(CLOCK_MONOTONIC,&a); long lim=(mode-8)*10000; int tries=0;
    for(;;){ if(recv(fd,b,64,MSG_DONTWAIT)>0) { spins+=tries; return;} tries++; clock_gettime(CLOCK_MONOTONIC,&z); if((z.tv_sec-a.tv_sec)*1000000000L+(z.tv_nsec-a.tv_nsec)>lim) break; }
    spins+=tries; sleeps++; ppoll(&p,1,NULL,NULL); recv(fd,b,64,MSG_DONTWAIT); return;}
  if(mode==1) ppoll(&p,1,NULL,NULL); else if (mode==2) ppoll(&p,1,&ts,NULL);
  else { struct pollfd q[2]={{fd,POLLIN,0},{fd,0,0}}; ppoll(q,2,&ts,NULL);} 
  recv(fd,b,64,MSG_DONTWAIT);
}
static int sv[2]; static int cc[100000], sc[100000]; static __thread int k; static void wr(int fd,char*b){ if(fd==sv[0]) cc[k++]=sched_getcpu(); else sc[k++]=sched_getcpu(); struct iovec v[2]={{b,16},{b+16,32}}; writev(fd,v,2);}
static void* srv(void*a){ char b[64]; for(int i=0;i<N;i++){rd(sv[1],b); wr(sv[1],b);} spins_all+=spins; sleeps_all+=sleeps; return 0;}
int main(int c,char**v){ mode=atoi(v[1]); socketpair(AF_UNIX,SOCK_STREAM,0,sv);
 pthread_t t; pthread_create(&t,0,srv,0); char b[64]={0};
 struct timespec a,z; clock_gettime(CLOCK_MONOTONIC,&a);
 for(int i=0;i<N;i++){ wr(sv[0],b); rd(sv[0],b);} clock_gettime(CLOCK_MONOTONIC,&z);
 printf("mode %d: %.2f us\n",mode,((z.tv_sec-a.tv_sec)*1e9+(z.tv_nsec-a.tv_nsec))/1e3/N); spins_all+=spins; sleeps_all+=sleeps; pthread_join(t,0); int same=0,c0=0; for(int i=0;i<N;i++){same+=cc[i]==sc[i]; c0+=cc[i]==0;} printf("checks/wait %.1f sleeps %ld\n",(double)spins_all/(2*N),(long)sleeps_all); printf("same cpu %d of %d, client on cpu0 %d\n",same,N,c0);}
