module sabench

go 1.19
